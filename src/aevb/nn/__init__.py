"""Networks and the distributions they output: MLPs and conv nets, encoder and decoder heads, priors, Bayesian layers, input corruption."""
