"""sizetransfer: will a local score model extrapolate across lattice size, and why not?

Subpackages (plain torch unless noted):
    teachers    exact FDLF teachers (density, score, response) and the Ising target
    diffusion   VE noise process, DSM loss, reverse-diffusion samplers
    models      LocalScoreCNN and other local students
    data        LightningDataModules streaming teacher / Ising samples (reusable alone)
    evaluation  size-extrapolation metrics and the Lightning evaluation callback
    module      ScoreModule (thin LightningModule);  fit  LightningCLI entry point
"""
__version__ = "0.1.0"
