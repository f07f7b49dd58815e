"""Write greensboro-tmy3.csv from the TMY3 file in pvlib's wheel (run once; the CSV is committed).

    pip download pvlib --no-deps -d /tmp/pvlib && unzip -o /tmp/pvlib/pvlib-*.whl \\
        pvlib/data/723170TYA.CSV -d /tmp/pvlib
    python examples/weather/extract.py /tmp/pvlib/pvlib/data/723170TYA.CSV

TMY3 rows are hourly, stamped with the END of the hour in local standard time (UTC-5 for
Greensboro). A typical meteorological year is twelve real months taken from different
years (January 1988, February 1996, ...): the months are kept in the order and with the
values given, laid on one calendar year (2001, not a leap year, as TMY3 has no 29 February),
so the series is continuous in time but jumps at month boundaries where the source year
changes. Columns kept: dry-bulb temperature (°C), relative humidity (%), global horizontal
irradiance (W/m²).
"""

from __future__ import annotations

import csv
import sys
from pathlib import Path

__all__ = ["main"]

HERE = Path(__file__).resolve().parent
YEAR_START = 978_307_200  # 2001-01-01T00:00:00Z
UTC_OFFSET_S = 5 * 3600  # local standard time is UTC-5
COLUMNS = {"temperature": "Dry-bulb (C)", "humidity": "RHum (%)", "ghi": "GHI (W/m^2)"}


def main(argv: list[str]) -> int:
    if len(argv) != 1:
        print(__doc__)
        return 2
    with open(argv[0], newline="") as f:
        rows = list(csv.reader(f))
    header, data = rows[1], rows[2:]  # row 0: station, name, state, UTC offset, lat, lon, elevation
    if len(data) != 8760:
        raise SystemExit(f"{argv[0]}: {len(data)} hourly rows, a TMY3 year has 8760")
    index = {name: header.index(column) for name, column in COLUMNS.items()}
    out = HERE / "greensboro-tmy3.csv"
    with open(out, "w", newline="") as f:
        w = csv.writer(f, lineterminator="\n")
        w.writerow(["ts", *COLUMNS])
        for hour, row in enumerate(data):
            # the end of the hour, in UTC: hour 0 is 01:00 local standard time on 1 January
            ts = YEAR_START + (hour + 1) * 3600 + UTC_OFFSET_S
            w.writerow([ts, *(f"{float(row[i]):g}" for i in index.values())])
    print(f"wrote {out} ({len(data)} rows)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
