"""The literature, for comparison only: closed-form laws, the counts they give, and the blind
reruns of the papers' protocols. Only the CLI and the tests import this layer."""
