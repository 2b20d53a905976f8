"""Encoders register themselves on import (see ``extractors/base.py``)."""
from extractors.base import ENCODERS, Encoder, EncoderInput, EncoderOutput, create_encoder, register_encoder

__all__ = ["ENCODERS", "Encoder", "EncoderInput", "EncoderOutput", "create_encoder", "register_encoder"]
