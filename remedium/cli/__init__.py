"""The `remedium` command line."""
