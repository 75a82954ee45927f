"""The browser explorer of a trained run: a page shipped in the package and a small local
server that decodes with the run's model (``aevb explore RUN``)."""
