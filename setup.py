"""WISV testbed: network-in-the-loop emulation of distributed speculative decoding."""
from setuptools import find_packages, setup

setup(
    name="wisv-testbed",
    version="0.1.0",
    description="Network-in-the-loop emulation testbed for distributed speculative decoding",
    python_requires=">=3.10",
    packages=find_packages(include=["wisv", "wisv.*", "channel_models", "channel_models.*",
                                    "traces", "traces.*", "topologies", "topologies.*",
                                    "nodes", "nodes.*", "procs", "procs.*", "runs", "runs.*"]),
    include_package_data=True,
    package_data={"traces": ["builtin/*.csv", "builtin/*.json"]},
    entry_points={"console_scripts": ["wisv = wisv.cli:main"]},
)
