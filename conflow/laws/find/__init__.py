"""`polynomial_laws`: a basis of all polynomial conservation laws of bounded degree (MATH.md §1.7).

Unknown: P(z) = Σ_α c_α z^α over the monomials of degree 1..k (or exactly k with
``homogeneous=True``; the constant is excluded) in the flow's state variables — θ for gradient
flows, (s, θ, v) for momentum flows (MATH.md §3.2; a law s·(bilinear form) has degree 3). P is a
law iff ⟨∇P(z), χ_j(z)⟩ = 0 for every generator χ_j (drift included) and every z (MATH.md §1.2,
§3.2); each (point, generator) pair gives one linear constraint on c,

    Σ_α c_α ⟨∇z^α, χ_j(z)⟩ = 0,

evaluated numerically (float64) at random generic points; the laws are the null space of the
constraint matrix, found by SVD with the cut and gap reporting of `conflow.engine.rank`.

Structure (what makes D = 200 at degree 2 — 20,300 unknowns — cheap). For polynomial models the
exact generator fields are available (`AbstractFlow.polynomial_fields`). If for a weight vector w every
field χ_j satisfies w·β − w_a = const_j for every monomial z^β of every component a, then
⟨∇z^α, χ_j⟩ only produces monomials of weight w·α + const_j, so a polynomial P is a law iff each of
its w-homogeneous parts is (monomials of different weight cannot cancel). The weights with this
property are the null space of an integer matrix M (differences of the vectors β − e_a within a
field): over Q (torus gradings: total degree, weighted degrees such as U:2, V:1 for ICNN, the
degree in s for momentum) and over GF(2) (sign flips: rows/columns/hidden neurons of linear and
ReLU nets). Monomials are split into classes of equal grade and each class is solved on its own:
the null space of the full system is the direct sum of the classes' null spaces. Any subset of
valid weights keeps this exact; weights are checked exactly (integer arithmetic) before use.
Without exact fields (non-polynomial φ, custom metric) everything is one class.

Per class: rows from P points (P·m ≥ #columns + margin, margin = max(8, #columns/3)), columns
divided by their RMS size, rows by the norm of their terms (so an analytically zero combination
sits at rounding level), SVD,
cut at ``rtol``; each null vector is then checked at fresh validation points (a non-law fails
there with probability one) and a class that fails is redone with twice the points.

Readable output: per class, the null space is brought to reduced row echelon form (monomials
ordered by degree, then variables), coefficients are rounded to small rationals when within 1e-9
and kept only if the rounded law still lies in the law space. A modest recogniser
(`recognise.families`) then matches laws against entries of matrix families built from the
parameter blocks:

- Gram differences of two blocks, optionally plus diag(b²) of a bias vector: e.g.
  (U1ᵀU1 − U2U2ᵀ)[i,j] (deep linear), (UᵀU − VᵀV)[i,j] (factorisation),
  (W1W1ᵀ + diag(b1²) − W2ᵀW2)[j,j] (ReLU neurons, diagonal only);
- vector families: column/row sums of two blocks, e.g. (colsum(U) − rowsum(V))[k] (NMF), a
  sum plus a Gram diagonal, e.g. (colsum(U) − 1/2·diag(VVᵀ) − 1/2·b²)[k] (ICNN), and the sums
  of one block, e.g. colsum(W)[k] (softmax layer);
- products of two laws already in the basis whose degrees add up to at most k (e.g. the 15
  products h_k·h_l of the 5 linear NMF laws among its degree-2 laws), printed as such;
- momentum: time factor × antisymmetric cross-Grams of two blocks,
  s·(Asym(U1ᵀdU1) + Asym(U2dU2ᵀ))[k,l] with Asym(X) = X − Xᵀ (linear nets).

The family's coefficients (λ) are fitted, rounded to rationals, and every entry is tested for
membership in the law space; recognised entries replace echelon rows when independent. Laws that
match no family are printed as polynomials.
"""

from conflow.laws.find.grading import monomial_classes, monomial_table
from conflow.laws.find.results import FamilyGroup, Law, LawBasis
from conflow.laws.find.search import gradient_cut, law_gradients, polynomial_laws
from conflow.laws.find.solver import generator_evaluator

__all__ = [
    "FamilyGroup",
    "Law",
    "LawBasis",
    "generator_evaluator",
    "gradient_cut",
    "law_gradients",
    "monomial_classes",
    "monomial_table",
    "polynomial_laws",
]
