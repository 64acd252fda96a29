"""mamba_jax: MAMBA (Rimon et al., ICLR 2024) in pure-functional JAX, with its meta-RL environments."""

from setuptools import setup

setup(
    name="mamba_jax",
    version="0.1.0",
    description="Model-based meta-RL (MAMBA) in pure-functional JAX, with jittable meta-RL environments",
    python_requires=">=3.11",
    packages=["mamba_jax", "envs", "experiments"],
    package_data={"envs": ["assets/*.xml"]},
    install_requires=[
        # gymnax 1.0.1 requires jax<0.12; jax 0.10.2 is the version measured here.
        "jax>=0.10.2,<0.12",
        "jaxlib>=0.10.2,<0.12",
        "flax>=0.12.8",
        "optax>=0.2.8",
        "chex>=0.1.92",
        "distrax>=0.1.9",
        # distrax pulls an unpinned tfp-nightly; pin the build measured here.
        "tfp-nightly==0.26.0.dev20261027",
        "gymnax==1.0.1",
        "orbax-checkpoint>=0.12.8",
        "absl-py>=2.5.1",
        # MuJoCo XLA for reacher / humanoid_dir; mujoco (C engine) checks it in the tests.
        "mujoco>=3.3",
        "mujoco-mjx>=3.3",
        "matplotlib>=3.9",
        "tensorboardX>=2.6.5",
        "numpy>=2.0",
    ],
    # pytest-xdist runs the test files in two processes (pytest.ini): the tests' time is mostly
    # single-threaded XLA compilation, so two processes use both cores of a 2-core CI machine.
    extras_require={"test": ["pytest>=9.0", "pytest-xdist>=3.8"]},
)
