"""float64 everywhere: numerical ranks at the gaps met here are wrong in float32 (DESIGN.md)."""

import jax

jax.config.update("jax_enable_x64", True)
