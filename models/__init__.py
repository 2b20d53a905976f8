"""Methods register themselves on import (see ``models/base.py``)."""
from models.base import METHODS, Method, MethodOutput, Stage, build_method, register_method

__all__ = ["METHODS", "Method", "MethodOutput", "Stage", "build_method", "register_method"]
