"""Encoders register themselves on import (see ``extractors/base.py``)."""
from extractors.base import ENCODERS, Encoder, EncoderInput, EncoderOutput, create_encoder, register_encoder
from extractors import audio, text, video  # noqa: F401,E402  (register the encoders)

__all__ = ["ENCODERS", "Encoder", "EncoderInput", "EncoderOutput", "create_encoder", "register_encoder"]
