"""What a trained model scores: the ELBO, importance-sampled log p(x), reconstruction, active units, sample quality."""
