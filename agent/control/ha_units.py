"""Which Home Assistant device class a forecast sensor announces, and which units it takes.

A target whose name is a Home Assistant sensor device class (or one of :data:`ALIASES`) and
that has a unit in the stream's ``units`` is announced with that device class. Home
Assistant then insists on its own list of units for the class: with any other (``"C"``
for ``temperature``) it rejects the unit and tells the user to file a bug with Home
Assistant, so ``sensorcast check`` (and the agent at start) reject it first, naming the
accepted units. The table is Home Assistant Core 2024.3.3's
``homeassistant.components.sensor.const.DEVICE_CLASS_UNITS`` (device classes whose units
are a fixed list), copied: the agent does not depend on Home Assistant.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Optional

from sensorcast.agent.config import Config
from sensorcast.agent.errors import ConfigError

__all__ = [
    "ALIASES",
    "DEVICE_CLASS_UNITS",
    "NOT_MEASUREMENT",
    "check_units",
    "device_class",
    "unit_problems",
]

_PRESSURE = frozenset({"Pa", "bar", "cbar", "hPa", "inHg", "kPa", "mbar", "mmHg", "psi"})
_VOLUME = frozenset({"CCF", "L", "fl. oz.", "ft³", "gal", "mL", "m³"})
_ENERGY = frozenset({"GJ", "MJ", "MWh", "Wh", "kWh"})
_UG_M3 = frozenset({"µg/m³"})

#: Device class -> the units Home Assistant 2024.3.3 accepts for it (case and symbols exact).
DEVICE_CLASS_UNITS: dict[str, frozenset[str]] = {
    "apparent_power": frozenset({"VA"}),
    "atmospheric_pressure": _PRESSURE,
    "battery": frozenset({"%"}),
    "carbon_dioxide": frozenset({"ppm"}),
    "carbon_monoxide": frozenset({"ppm"}),
    "current": frozenset({"A", "mA"}),
    "distance": frozenset({"cm", "ft", "in", "km", "m", "mi", "mm", "yd"}),
    "duration": frozenset({"d", "h", "min", "ms", "s"}),
    "energy": _ENERGY,
    "energy_storage": _ENERGY,
    "frequency": frozenset({"GHz", "Hz", "MHz", "kHz"}),
    "gas": frozenset({"CCF", "ft³", "m³"}),
    "humidity": frozenset({"%"}),
    "illuminance": frozenset({"lx"}),
    "irradiance": frozenset({"BTU/(h⋅ft²)", "W/m²"}),
    "moisture": frozenset({"%"}),
    "nitrogen_dioxide": _UG_M3,
    "nitrogen_monoxide": _UG_M3,
    "nitrous_oxide": _UG_M3,
    "ozone": _UG_M3,
    "pm1": _UG_M3,
    "pm10": _UG_M3,
    "pm25": _UG_M3,
    "power": frozenset({"W", "kW"}),
    "precipitation": frozenset({"cm", "in", "mm"}),
    "precipitation_intensity": frozenset({"in/d", "in/h", "mm/d", "mm/h"}),
    "pressure": _PRESSURE,
    "reactive_power": frozenset({"var"}),
    "signal_strength": frozenset({"dB", "dBm"}),
    "sound_pressure": frozenset({"dB", "dBA"}),
    "speed": frozenset({"ft/s", "in/d", "in/h", "km/h", "kn", "m/s", "mm/d", "mm/h", "mph"}),
    "sulphur_dioxide": _UG_M3,
    "temperature": frozenset({"K", "°C", "°F"}),
    "volatile_organic_compounds": _UG_M3,
    "volatile_organic_compounds_parts": frozenset({"ppb", "ppm"}),
    "voltage": frozenset({"V", "mV"}),
    "volume": _VOLUME,
    "volume_storage": _VOLUME,
    "volume_flow_rate": frozenset({"L/min", "ft³/min", "gal/min", "m³/h"}),
    "water": frozenset({"CCF", "L", "ft³", "gal", "m³"}),
    "weight": frozenset({"g", "kg", "lb", "mg", "oz", "st", "µg"}),
    "wind_speed": frozenset({"ft/s", "km/h", "kn", "m/s", "mph"}),
}

#: Device classes Home Assistant allows only with ``state_class`` total(_increasing): their
#: forecast sensors are announced without a state class (a forecast is not a meter reading).
NOT_MEASUREMENT = frozenset({"energy", "gas", "volume", "water"})

#: Common target names for those device classes.
ALIASES = {
    "co2": "carbon_dioxide",
    "co": "carbon_monoxide",
    "lux": "illuminance",
    "pm2_5": "pm25",
    "voc": "volatile_organic_compounds",
    "rain": "precipitation",
}


def device_class(target: str) -> Optional[str]:
    """The device class a target with a unit is announced with, or None."""
    name = target.lower()
    name = ALIASES.get(name, name)
    return name if name in DEVICE_CLASS_UNITS else None


def unit_problems(cfg: Config, streams: Sequence[tuple[str, Any]]) -> list[str]:
    """One line per stream target whose unit Home Assistant would reject for its device
    class; ``streams`` are ``(name, manifest)`` pairs. Empty when discovery is off (the
    unit then goes nowhere)."""
    if not cfg.homeassistant.enabled:
        return []
    problems: list[str] = []
    for name, manifest in streams:
        stream_cfg = next(s for s in cfg.streams if s.name == name)
        units = dict(stream_cfg.units)
        for target in manifest.targets:
            unit, cls = units.get(target), device_class(target)
            if unit is None or cls is None or unit in DEVICE_CLASS_UNITS[cls]:
                continue
            accepted = ", ".join(sorted(DEVICE_CLASS_UNITS[cls]))
            problems.append(
                f"stream {name}: units.{target} = {unit!r} is not a unit Home Assistant accepts "
                f"for device class {cls}; use one of: {accepted}"
            )
    return problems


def check_units(cfg: Config, streams: Sequence[tuple[str, Any]]) -> None:
    """Raise :class:`ConfigError` naming every unit :func:`unit_problems` finds."""
    problems = unit_problems(cfg, streams)
    if problems:
        raise ConfigError(f"config {cfg.path}: " + "; ".join(problems))
