"""Collection settings for the whole repository (the doctests of hpsearch/ included)."""

# Importing it runs the command line.
collect_ignore = ["hpsearch/__main__.py"]
