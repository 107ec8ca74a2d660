"""Print the one-screen summary of `make demo BOARD=...`: the run's metrics and the board report."""

import json
import pathlib
import sys


def main(run, report):
    m = json.loads((pathlib.Path(run) / "metrics.json").read_text())
    r = json.loads(pathlib.Path(report).read_text())
    res = r["resources"]
    print(f"\n== ternpe demo on {r['board']} ==")
    print(f"accuracy        float {m['float_accuracy']:.4f}  ternary+pruned {m['accuracy']:.4f}  "
          f"integer (= hardware) {m['integer_accuracy']:.4f}")
    print(f"compression     CR {m['compression_rate']:.1f}x, storage {m['storage_compression']:.1f}x, "
          f"tile density {m['group_density']:.3f}")
    print(f"cycles          {r['cycles_per_inference']} per inference, {r['dense_cycles'] / r['cycles_per_inference']:.2f}x "
          f"fewer than dense ({r['dense_cycles']}), PE {r['geometry']}")
    print(f"clock           {r['clock_mhz']:.2f} MHz (fmax {r['fmax_mhz']:.2f} MHz)")
    print(f"inferences/s    {r['inferences_per_s_compute']:,.0f} compute, {r['inferences_per_s_link']:,.0f} "
          f"over the {r['baud'] / 1e6:g} Mbaud UART")
    print("resources       " + ", ".join(f"{k} {v['used']}/{v['available']}" for k, v in res.items()
                                         if isinstance(v, dict)))
    print(f"bitstream       {r['bitstream']} ({r['bitstream_bytes']:,} bytes, built in {r['build_s']:.0f} s)")


if __name__ == "__main__":
    main(*sys.argv[1:3])
