"""Three calibrations in a row (lib.jobs.eta.calibrate, method 2), each in a fresh process: how still it holds."""
import json, subprocess, sys
from lib.harness import bench
rows = [json.loads(subprocess.run([sys.executable, "-c", "import json; from lib.jobs import eta; print(json.dumps(eta.calibrate()))"],
                                  capture_output=True, text=True, check=True).stdout.strip().splitlines()[-1]) for _ in range(3)]
json.dump({"calibrations": rows, "env": bench.environment()}, open(sys.argv[1], "w"), indent=1)
