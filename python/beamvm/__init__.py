"""beamvm: a BEAM-class process virtual machine for Python."""

from beamvm._native import __version__

__all__ = ["__version__"]
