"""Under :func:`oe_web_socketio.patch.patch`, a query waits without blocking
other greenlets: the precondition of serving thousands of sockets while
reading the ERP database."""

import configparser
import textwrap

from .tryton import run_python


def test_queries_in_greenlets_overlap_and_let_others_run(appliance):
    conf = configparser.ConfigParser(interpolation=None)
    conf.read(appliance.directory / "etc" / "trytond.conf")
    uri = conf["database"]["uri"]
    script = textwrap.dedent(
        f"""
        from oe_web_socketio.patch import patch
        patch()
        import gevent, psycopg
        events = []
        ticks = 0
        def query(name):
            with psycopg.connect({uri!r}, dbname="postgres") as conn:
                events.append(("start", name))
                conn.execute("SELECT pg_sleep(0.3)")
                events.append(("end", name))
        def ticker():
            global ticks
            while True:
                ticks += 1
                gevent.sleep(0.01)
        tick = gevent.spawn(ticker)
        gevent.joinall([gevent.spawn(query, n) for n in ("a", "b")], raise_error=True)
        tick.kill()
        print([kind for kind, _ in events], ticks > 5)
        """
    )
    result = run_python(script)
    assert result.returncode == 0, result.stderr
    # Both queries started before either ended, and the ticker kept running.
    assert result.stdout.strip() == "['start', 'start', 'end', 'end'] True"
