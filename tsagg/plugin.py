"""
The OCS plugin registry of tsagg: how C{ocs-agent-cli} finds the
TimestreamAggregator agent (through the C{ocs.plugins} entry point).
"""

package_name = "tsagg"
agents = {
    "TimestreamAggregator": {"module": "tsagg.agent", "entry_point": "main"},
}
