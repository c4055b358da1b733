"""chaosmirror: copy the container images of a Harness Chaos Engineering release to your own registry."""

__version__ = "0.1.0"
