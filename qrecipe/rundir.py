"""Kept for output directories written before the subpackage layout: their recipe.lock.yaml and
.hydra/ name `qrecipe.rundir.OutputCheck` as Hydra's callback. New runs name
`qrecipe.run.rundir.OutputCheck`. Nothing inside qrecipe imports this module."""
from qrecipe.run.rundir import OutputCheck

__all__ = ["OutputCheck"]
