"""Channel models: seeded CSI generators (fading, shadowing, bursts) and the CSI → link mapping.

Pure numpy/scipy; no root needed. Every generator takes an explicit ``numpy.random.Generator``
or seed, so a series is reproducible from its parameters alone.
"""
from channel_models.fading import FadingSpec, fading_gain, doppler_hz
from channel_models.shadowing import ShadowingSpec, shadowing_db
from channel_models.gilbert_elliott import GilbertElliottSpec, gilbert_elliott_states
from channel_models.cqi import CQI_TABLES, snr_to_cqi, cqi_efficiency
from channel_models.mapping import LinkMapping, ShannonMapping, CqiMapping, HarqModel, LinkSeries
from channel_models.generator import DirectionSpec, ChannelSpec, generate_csi, generate_link

__all__ = [
    "FadingSpec", "fading_gain", "doppler_hz", "ShadowingSpec", "shadowing_db",
    "GilbertElliottSpec", "gilbert_elliott_states", "CQI_TABLES", "snr_to_cqi", "cqi_efficiency",
    "LinkMapping", "ShannonMapping", "CqiMapping", "HarqModel", "LinkSeries",
    "DirectionSpec", "ChannelSpec", "generate_csi", "generate_link",
]
