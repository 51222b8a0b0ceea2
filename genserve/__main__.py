"""`python -m genserve ...` is the `genserve` command."""

from genserve.cli import main

main()
