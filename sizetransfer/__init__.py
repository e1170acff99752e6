"""sizetransfer: will a local score model extrapolate across lattice size, and why not?

Subpackages (plain torch unless noted):
    teachers    exact FDLF teachers (density, score, response) and the Ising target
    diffusion   VE noise process, DSM loss, reverse-diffusion samplers
    models      LocalScoreCNN and other local students
    data        LightningDataModules streaming teacher / Ising samples (reusable alone)
    evaluation  size-extrapolation metrics and the Lightning evaluation callback
    module      ScoreModule (thin LightningModule);  fit  LightningCLI entry point

The formulas, teachers, metrics, training recipe and outputs are documented in docs/ of the
repository (docs/README.md maps each paper equation to the one function that implements it).
"""
__version__ = "0.1.0"


def __getattr__(name):
    """``sizetransfer.diagnose(score_fn, target, ...)`` without importing the subpackage first (docs/diagnose.md)."""
    if name == "diagnose":
        import importlib

        return importlib.import_module("sizetransfer.diagnose")
    raise AttributeError(f"module 'sizetransfer' has no attribute {name!r}")
