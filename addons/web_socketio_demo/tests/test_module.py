# This file is part of oe.web.socketio. The COPYRIGHT file at the top level of
# this repository contains the full copyright notices and license terms.
from trytond.tests.test_tryton import ModuleTestCase


class WebSocketIODemoTestCase(ModuleTestCase):
    "Test the web_socketio_demo module"

    module = "web_socketio_demo"


del ModuleTestCase
