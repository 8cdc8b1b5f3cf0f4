"""``python -m zoo.export``: see `zoo.export.cli`."""

import sys

if __name__ == "__main__":
    from zoo.cli import start_tensorflow_for_main

    start_tensorflow_for_main()  # quiet TensorFlow's start before the imports below load it
    from zoo.export.cli import main

    sys.exit(main())
