"""`python -m service`: the same as `mnist-serve`."""

from service.cli import main

main()
