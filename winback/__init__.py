"""winback command-line interface: a thin layer over `features`, `training` and `serving`."""
