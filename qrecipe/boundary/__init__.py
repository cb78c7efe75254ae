"""The trust boundary: everything from outside (recipe files, locks, run directories, model
folders, cache entries, path arguments) passes one of these checks before qrecipe or a library
uses it. Nothing here imports torch or a backend library."""
