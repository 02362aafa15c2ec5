"""Watching laws along runs: the training `problem` (loss on a parameter pytree), `monitors`,
continuous flows integrated with diffrax (`simulate`), discrete optimizers and the `train` loop
(`optimizers`), run `results`, `drift` reports and `plots`."""
