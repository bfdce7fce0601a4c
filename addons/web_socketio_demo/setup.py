# This file is part of oe.web.socketio. The COPYRIGHT file at the top level of
# this repository contains the full copyright notices and license terms.
"""The Tryton module web_socketio_demo, installed as
trytond.modules.web_socketio_demo."""

from setuptools import setup

MODULE = "web_socketio_demo"
PACKAGE = "trytond.modules." + MODULE

setup(
    name="trytond_" + MODULE,
    version="8.0.0",
    description="oe.web.socketio demo: parties published as they change",
    license="GPL-3.0-or-later",
    python_requires=">=3.11",
    package_dir={PACKAGE: "."},
    packages=[PACKAGE, PACKAGE + ".tests"],
    package_data={PACKAGE: ["tryton.cfg", "*.xml"]},
    install_requires=[
        "trytond >= 8.0, < 8.1",
        "trytond_party >= 8.0, < 8.1",
        "trytond_web_socketio",
    ],
    entry_points={"trytond.modules": [MODULE + " = " + PACKAGE]},
    zip_safe=False,
)
