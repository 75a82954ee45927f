"""One module per dataset source: MNIST and Fashion-MNIST, scikit-learn digits, Frey Face, folders of images, and the raw file formats they come in."""
