"""`qrecipe plan`: memory, disk and time estimates from a model's shape, before any run."""
