"""Inference as pure functions over distributions: the ELBO and IWAE bounds (nats per example), schedules of the step, HMC, marginal-likelihood estimators."""
