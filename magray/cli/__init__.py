"""The `magray` command line: parser.py builds, commands.py handles, render.py prints."""
