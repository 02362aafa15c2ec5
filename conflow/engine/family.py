"""`VectorFamily`: the generators G(z, a) = Σ_j a_j χ_j(z) a flow hands to the engine."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable

import jax

from conflow.engine.brackets import Family

Array = jax.Array


@dataclasses.dataclass(frozen=True)
class VectorFamily:
    """A family of vector fields on R^n, linear in its coefficients.

    Attributes:
        field: ``(z, a) -> R^n`` with ``z`` of shape ``(n,)`` and ``a`` of shape ``(m,)``, linear in
            ``a``: field(z, a) = Σ_j a_j χ_j(z). Must be a JAX-traceable function.
        state_dim: n.
        n_coeffs: m, the number of generators χ_j.
        name: for reports.
        sample_field: optional ``(z, f) -> R^n``, equal to ``field(z, a(f))`` for *structured*
            coefficient vectors a(f) ∈ R^m, f of shape ``(n_sample_coeffs,)``, where a is a
            polynomial map whose image spans R^m (e.g. tensor products of per-layer vectors: then
            a generic element Σ_j a_j χ_j of W_0 is the gradient of one forward pass, never a sum
            over the m generators). Random f with a density then give generic elements of every
            level (the image of an irreducible variety is not contained in a proper subspace of
            its span), so the engine draws f and evaluates ``sample_field`` when it is given.
        n_sample_coeffs: length of f.
        generators: optional ``z -> (n, m)``, the matrix of all generators at z (column j is
            χ_j(z), so field(z, a) = generators(z) @ a), given where it costs far less than m
            evaluations of ``field`` (a network on a sample of N inputs: per-input Jacobians,
            about one pass of the network, where each evaluation of ``field`` is one). For a
            costly field (`conflow.engine.evaluate.costly_field`) the engine then weighs the
            generators from it (`conflow.engine.evaluate.generator_weights`) and draws the
            generic elements of W_0 as its products with random coefficients.
        costly: whether each evaluation of the sampled field is costly (its bracket levels
            then start with a small probe stack, `conflow.engine.levels.first_stack`);
            ``None``: judged by its size (`conflow.engine.evaluate.costly_field`).
    """

    field: Family
    state_dim: int
    n_coeffs: int
    name: str = ""
    sample_field: Family | None = None
    n_sample_coeffs: int | None = None
    generators: Callable[[Array], Array] | None = None
    costly: bool | None = None

    @property
    def sampled(self) -> tuple[Family, int]:
        """The field the engine evaluates on random coefficients, and their number."""
        if self.sample_field is not None:
            return self.sample_field, int(self.n_sample_coeffs)
        return self.field, self.n_coeffs
