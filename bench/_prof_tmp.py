import sys, json, tempfile, os, signal, time
from pathlib import Path
from bench.ab import Tree, TreeServer, _targets, _measure
from bench.load import LoadSpec, run_load
from bench.servers import PlatformServer
tree = Tree.parse(sys.argv[1]); cell = sys.argv[2]; conc = int(sys.argv[3]); out = sys.argv[4]
tree.env["PROF_OUT"] = out
class S(TreeServer):
    def _start(self, command, env):
        command = [sys.executable, "-P", "/tmp/perf_prof_serve.py", str(self.port)]
        env = {**env, **self.tree.env, "PYTHONPATH": self.tree.pythonpath()}
        PlatformServer._start(self, command, env)
with tempfile.TemporaryDirectory() as tmp:
    with S(Path(tmp)/"p", Path("/tmp/bench_art_perf"), tree) as server:
        targets = _targets(server, [cell], 64)
        url, body = targets[cell]
        run_load(LoadSpec(url, body, server.token, conc, 2, 0))
        os.kill(server.pid, signal.SIGUSR1)
        s = _measure(server.pid, LoadSpec(url, body, server.token, conc, 4, 0))
        os.kill(server.pid, signal.SIGUSR2)
        time.sleep(1)
        print(cell, conc, s.load.requests_per_s, s.loop_ms, s.load.requests)
