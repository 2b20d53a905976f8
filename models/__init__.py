"""Methods register themselves on import (see ``models/base.py``)."""
from models.base import METHODS, Method, MethodOutput, Stage, build_method, register_method

__all__ = ["METHODS", "Method", "MethodOutput", "Stage", "build_method", "register_method"]
from models import telme  # noqa: F401,E402  (registers "telme")
from models import cmath, summer  # noqa: F401,E402  (registers "cmath", "summer")
from models import dmd, dhmd  # noqa: F401
