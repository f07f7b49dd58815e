"""A pytest plugin for test runs inside the arm64 chroot (``-p tests.qemu.arm64_plugin``).

It is imported before ``tests/conftest.py``, which loads the Hypothesis profile named by
``HYPOTHESIS_PROFILE``, so the ``qemu`` profile it registers can be chosen there. Under
emulation the property tests run fewer examples (``bench/fuzz`` and the host run cover
volume; here the point is that the same code behaves the same on arm64), and keep no example
database: the checkout is mounted read-only.

It also refuses to run anywhere but on aarch64, so a mistake in the harness cannot pass
x86 results off as arm64 ones, prints the platform in the report header, and leaves out the
few tests that need what only the x86 build host has (:data:`EXCLUDED`, with the reason).
"""

from __future__ import annotations

import platform

import numpy as np
import pytest
from hypothesis import HealthCheck, settings

#: Examples per property test under emulation (the host runs 300).
QEMU_EXAMPLES = 60

settings.register_profile(
    "qemu",
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
    max_examples=QEMU_EXAMPLES,
    database=None,
)


#: Tests that cannot run in the agent's arm64 install, and why. Only the agent and its
#: dependencies are installed there: no TensorFlow, which has no place on the device.
EXCLUDED = {
    "tests/unit/test_bundle.py::test_manifest_with_lying_shapes_is_rejected_when_loaded": (
        "writes a bundle with sensorcast.convert.bundle.embed_manifest, which needs TensorFlow's "
        "flatbuffer schema (the converter's build-time dependency)"
    ),
    # The same: tests/support/manifests.py embeds each hostile manifest with it.
    **{
        test: "writes bundles through tests/support/manifests.py, which embeds manifests "
        "with the converter's embed_manifest (TensorFlow's flatbuffer schema)"
        for test in (
            "tests/unit/test_bundle.py::test_a_period_of_1e_300_is_refused_wherever_a_bundle_is_read",
            "tests/unit/test_bundle.py::test_output_shape_error_prints_plain_ints",
            "tests/unit/test_hostile_input.py::test_manifest_numbers_through_the_whole_load_path",
            "tests/unit/test_info.py::test_info_shows_every_new_manifest_field",
            "tests/unit/test_info.py::test_info_says_loudly_when_a_bundle_loses_to_a_naive_forecast",
            "tests/unit/test_info.py::test_check_asks_no_input_for_computed_features",
            "tests/unit/test_out_of_range.py::test_forecaster_checks_the_window_against_its_bundles_range",
            "tests/unit/test_out_of_range.py::test_forecasts_are_published_marked_and_counted",
            "tests/unit/test_out_of_range.py::test_home_assistant_shows_it_as_an_attribute",
            "tests/unit/test_out_of_range.py::test_a_reloaded_bundle_brings_its_own_range",
            "tests/unit/test_out_of_range.py::test_the_moving_check_agrees_with_the_whole_windows",
            "tests/unit/test_time_features.py::test_a_computed_feature_needs_no_input_and_refuses_one",
            "tests/unit/test_time_features.py::test_rollout_with_computed_features_is_refused",
            "tests/unit/test_time_features.py::test_the_agent_forecasts_with_computed_features_from_sensor_readings_only",
        )
    },
    "tests/unit/test_out_of_range.py::test_a_rollout_is_judged_on_the_sensors_window_only": (
        "converts a single-step model with TensorFlow"
    ),
    "tests/unit/test_run_stays_small.py::"
    "test_releasing_the_runtimes_load_time_code_keeps_its_answers": (
        "qemu-user runs the guest's code by translating it: its libraries are mapped without "
        "execute permission (r--p in /proc/self/smaps), so there is no code mapping to release "
        "and the agent's release is a no-op here; a real arm64 kernel maps them r-xp"
    ),
    "tests/unit/test_run_stays_small.py::"
    "test_a_library_written_moments_ago_still_counts_as_clean_code": (
        "the same: under qemu-user a library it maps has no r-xp mapping to find"
    ),
    "tests/unit/test_info.py::test_norm_is_a_build_time_command": (
        "runs `sensorcast norm`, a build-time command of the converter package"
    ),
    # The source tree's rules: they read and probe the checkout with the dev tools (ruff,
    # import-linter, pip wheel), which the device's install has no use for; the host runs them.
    **{
        f"tests/unit/test_architecture.py::{test}": "checks the checkout with the dev tools "
        "(ruff, import-linter, pip), not the agent's behaviour on arm64"
        for test in (
            "test_import_contracts_are_kept",
            "test_the_contracts_are_not_vacuous",
            "test_no_function_over_complexity_10",
            "test_the_complexity_check_is_not_vacuous",
            "test_the_wheel_installs_sensorcast_and_nothing_generic",
        )
    },
}


def pytest_configure(config: pytest.Config) -> None:
    if platform.machine() != "aarch64":
        raise pytest.UsageError(
            f"tests.qemu.arm64_plugin is for the arm64 chroot, not {platform.machine()}"
        )


def pytest_report_header(config: pytest.Config) -> str:
    return f"arm64 chroot: machine {platform.machine()}, numpy {np.__version__}"


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    files = {item.nodeid.split("::")[0] for item in items}
    ids = {item.nodeid for item in items}
    stale = [n for n in EXCLUDED if n.split("::")[0] in files and n not in ids]
    if stale:
        raise pytest.UsageError(f"EXCLUDED in tests/qemu/arm64_plugin.py names no test: {stale}")
    left_out = [item for item in items if item.nodeid in EXCLUDED]
    if left_out:
        config.hook.pytest_deselected(items=left_out)
        items[:] = [item for item in items if item.nodeid not in EXCLUDED]
