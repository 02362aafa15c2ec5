"""The numeric Lie-trace engine (bottom layer): brackets by autodiff, the rank and its band, the
level construction at generic points (dense and streamed), distribution over devices and
processes, and the jaxpr walker shared with the exact engine."""
