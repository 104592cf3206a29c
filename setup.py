from setuptools import setup

setup(
    name="tsagg",
    version="0.1.0",
    description=("Record spt3g G3 frame streams into rotating .g3 files "
                 "inside a Twisted reactor: an OCS agent, a twistd plugin "
                 "and a library."),
    long_description=open("README.md").read(),
    long_description_content_type="text/markdown",
    license="BSD-2-Clause",
    python_requires=">=3.9",
    packages=["tsagg", "twisted.plugins"],
    package_data={"twisted": ["plugins/tsagg_plugin.py"]},
    install_requires=[
        "twisted>=22.10",
        "spt3g>=1.0",
        "zope.interface",
        "crc32c",
        "numpy",
        "ocs>=0.12",
    ],
    extras_require={
        "test": ["hypothesis", "so3g", "libfaketime", "socs"],
        # Registering closed files in socs' suprsync database.
        "suprsync": ["socs"],
    },
    entry_points={
        "console_scripts": [
            "tsagg-sim = tsagg.simulator:main",
            "tsagg-ls = tsagg.report:main",
        ],
        "ocs.plugins": ["tsagg = tsagg.plugin"],
    },
)
