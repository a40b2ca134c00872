"""`convmesh send`: stream an event file to the Conversions API or conversions.raw."""
