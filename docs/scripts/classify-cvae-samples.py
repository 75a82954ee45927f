"""Class-conditional samples of the MNIST cvae runs, classified by a logistic regression trained
on the real MNIST training images; the vae's samples scored against the same labels."""

import time

import numpy as np
import torch
from sklearn.linear_model import LogisticRegression

import aevb
from aevb.config.schema import DataConfig
from aevb.models import Batch

data = aevb.load_dataset(DataConfig(name="mnist", binarize="none"))
x = data.train.values().flatten(1).numpy()
y = data.train.y.numpy()
started = time.perf_counter()
classifier = LogisticRegression(max_iter=300).fit(x, y)
test_accuracy = classifier.score(data.test.values().flatten(1).numpy(), data.test.y.numpy())
print(f"classifier: {time.perf_counter() - started:.0f} s, accuracy on real test images "
      f"{test_accuracy:.4f}")
labels = np.repeat(np.arange(10), 100)

for run in ("cvae", "conv-cvae", "cvae-standard"):
    fitted = aevb.load(run)  # run from runs/vae-family
    samples = np.concatenate([fitted.sample(100, label=k, seed=k) for k in range(10)])
    rate = (classifier.predict(samples.reshape(len(samples), -1)) == labels).mean()
    model = fitted.model
    xs, ys = data.test.values()[:200], data.test.y[:200]
    with torch.no_grad():
        z = model.encode(Batch(xs, ys))
        decoded = model.decode(z[:, None].expand(-1, 10, -1), model.condition_of(torch.arange(10)))
    predicted = classifier.predict(decoded.reshape(-1, 784).numpy()).reshape(200, 10)
    as_condition = (predicted == np.arange(10)).mean()
    as_input = (predicted == ys.numpy()[:, None]).mean()
    print(f"{run}: samples {rate:.3f} of 1000 (100 per label) classified as their label;"
          f" analogies of 200 test images x 10 labels: {as_condition:.3f} classified as the label"
          f" decoded with, {as_input:.3f} as the input's own label")
vae = aevb.load("vae")
samples = vae.sample(1000, seed=0)
rate = (classifier.predict(samples.reshape(len(samples), -1)) == labels).mean()
print(f"vae (unconditional), scored against the same labels: {rate:.3f}")
