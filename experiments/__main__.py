import sys

from experiments._cli import main

sys.exit(main(sys.argv[1:]))
