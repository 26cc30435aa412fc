import sys

from keras_lottery.cli import main

sys.exit(main())
