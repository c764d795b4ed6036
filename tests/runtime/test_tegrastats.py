# ruff: noqa: E501  (the tegrastats lines are verbatim)
"""The parser on the verbatim lines of the shared Jetson notes (jetson-tensorrt.md)."""

from edge.tegrastats import parse_line

ORIN_NANO = (
    "06-18-2025 11:25:24 RAM 3452/7620MB (lfb 25x4MB) SWAP 1518/16384MB (cached 174MB) CPU "
    "[1%@1420,2%@1420,0%@1420,2%@1420,2%@729,1%@729] GR3D_FREQ 0% cpu@50.031C soc2@49.031C soc0@50C "
    "gpu@49.031C tj@50.25C soc1@50.25C VDD_IN 4824mW/4824mW VDD_CPU_GPU_CV 518mW/518mW VDD_SOC "
    "1475mW/1475mW"
)
ORIN_8GB = (
    "11-15-2024 08:38:09 RAM 6185/7620MB (lfb 8x2MB) SWAP 851/3810MB (cached 1MB) CPU "
    "[15%@729,11%@729,14%@729,13%@729,11%@729,8%@729] EMC_FREQ 43%@2133 GR3D_FREQ 63%@[621] NVDEC off "
    "NVJPG off NVJPG1 off VIC off OFA off APE 200 cpu@53.968C soc2@52.437C soc0@50.75C gpu@53.343C "
    "tj@53.968C soc1@51.656C VDD_IN 12479mW/12479mW VDD_CPU_GPU_CV 4667mW/4667mW VDD_SOC 2817mW/2817mW"
)
ORIN_NX = (
    "05-15-2025 18:30:28 RAM 6982/7620MB (lfb 5x1MB) SWAP 2640/16384MB (cached 202MB) CPU "
    "[97%@1984,95%@1984,95%@1984,91%@1984,88%@1984,93%@247] EMC_FREQ 18%@3199 GR3D_FREQ 84%@[713] "
    "NVENC 1%@115 NVDEC 40%@115 NVJPG off NVJPG1 off VIC 31%@115 OFA off NVDLA0 off PVA0_FREQ off APE 174 "
    "cv0@63.031C cpu@65.562C soc2@64.156C soc0@63.031C cv1@62.937C gpu@63.5C tj@65.562C soc1@64.718C "
    "cv2@60.875C VDD_IN 17946mW/15710mW VDD_CPU_GPU_CV 8896mW/7585mW VDD_SOC 3923mW/3515mW"
)
AGX_ORIN = (
    "04-11-2025 10:36:27 RAM 4321/62801MB (lfb 1759x4MB) SWAP 19/31400MB (cached 0MB) CPU "
    "[0%@729,0%@729,0%@729,0%@729,0%@729,0%@729,0%@729,0%@729,0%@729,0%@729,0%@729,0%@729] "
    "EMC_FREQ 0%@2133 GR3D_FREQ 0%@[0,0] VIC_FREQ 729 APE 174 CV0@-256C CPU@44.562C Tboard@32C "
    "SOC2@40.093C Tdiode@33C SOC0@41.093C CV1@-256C GPU@-256C tj@44.343C SOC1@41.25C CV2@-256C "
    "VDD_GPU_SOC 2340mW/2340mW VDD_CPU_CV 390mW/390mW VIN_SYS_5V0 4025mW/4025mW NC 0mW/0mW "
    "VDDQ_VDD2_1V8AO 301mW/301mW NC 0mW/0mW"
)
AGX_JP72 = (
    "07-25-2026 09:08:28 RAM 20642/62817MB (lfb 1x2MB) CPU "
    "[23%@2201,10%@2201,4%@2201,14%@2201,30%@2201,18%@2201,10%@2201,10%@2201,33%@2201,7%@2201,5%@2201,"
    "27%@2201] EMC_FREQ 3%@3199 GR3D_FREQ 12%@[1300,1300] NVENC0 off NVDEC0 off NVJPG0 off NVJPG1 off "
    "VIC off OFA off NVDLA0 off NVDLA1 off PVA0_FREQ off APE 174 cpu@52.968C/52.968C soc2@48.406C/48.406C "
    "soc0@49.531C/49.531C gpu@47.625C/47.625C VDD_GPU_SOC 5139mW/5139mW/5139mW VDD_CPU_CV "
    "3268mW/3268mW/3268mW VIN_SYS_5V0 5500mW/5500mW/5500mW"
)
THOR = (
    "04-21-2026 15:50:52 RAM 105265/125772MB (lfb 34x4MB) CPU "
    "[0%@972,0%@972,0%@972,0%@972,0%@972,0%@972,1%@972,0%@972,0%@972,0%@972,0%@972,8%@972,0%@972,0%@972] "
    "EMC_FREQ 0%@2750 GR3D_FREQ @[314,314,314] NVENC0_FREQ @314 NVENC1_FREQ @314 NVDEC0_FREQ @314 "
    "NVDEC1_FREQ @314 NVJPG0_FREQ @314 VIC off OFA_FREQ @315 PVA0_FREQ off APE 300 cpu@37.343C tj@38.875C "
    "soc012@37.468C gpu@38.875C soc345@37.406C VDD_GPU 1962mW/1962mW VDD_CPU_SOC_MSS 5887mW/5887mW "
    "VIN_SYS_5V0 5635mW/5635mW VIN 19780mW/19780mW"
)


def test_orin_nano():
    s = parse_line(ORIN_NANO)
    assert s.time == "06-18-2025 11:25:24"
    assert (s.ram_used_mb, s.ram_total_mb, s.swap_used_mb, s.swap_total_mb) == (3452, 7620, 1518, 16384)
    assert s.cpu_load == [1, 2, 0, 2, 2, 1] and s.cpu_freq_mhz[-1] == 729
    assert s.gpu_load == 0 and s.gpu_freq_mhz == []
    assert s.temps_c["tj"] == 50.25 and s.temps_c["soc0"] == 50.0
    assert s.power_mw == {"VDD_IN": 4824, "VDD_CPU_GPU_CV": 518, "VDD_SOC": 1475}


def test_orin_8gb_and_nx_skip_engines():
    s = parse_line(ORIN_8GB)
    assert s.gpu_load == 63 and s.gpu_freq_mhz == [621] and s.emc_load == 43
    assert s.power_mw["VDD_IN"] == 12479 and "APE" not in s.power_mw and "NVDEC" not in s.power_mw
    assert s.temps_c["gpu"] == 53.343
    n = parse_line(ORIN_NX)
    assert n.gpu_load == 84 and n.cpu_load[0] == 97 and n.cpu_freq_mhz[-1] == 247
    assert n.power_mw["VDD_IN"] == 17946 and n.power_avg_mw["VDD_IN"] == 15710
    assert n.temps_c["cv2"] == 60.875 and len(n.temps_c) == 9


def test_agx_orin_powered_off_sensors_and_upper_case():
    s = parse_line(AGX_ORIN)
    assert s.gpu_load == 0 and s.gpu_freq_mhz == [0, 0]
    assert s.temps_c["gpu"] is None and s.temps_c["cv0"] is None and s.temps_c["cpu"] == 44.562
    assert s.temps_c["tboard"] == 32.0
    assert s.power_mw["VDD_GPU_SOC"] == 2340 and s.power_mw["NC"] == 0
    assert s.power_mw["VDDQ_VDD2_1V8AO"] == 301 and len(s.cpu_load) == 12
    assert s.swap_used_mb == 19


def test_jetpack72_pairs_and_triples_no_swap():
    s = parse_line(AGX_JP72)
    assert s.swap_used_mb is None and s.ram_used_mb == 20642
    assert s.gpu_load == 12 and s.gpu_freq_mhz == [1300, 1300]
    assert s.temps_c["cpu"] == 52.968 and s.temps_c["gpu"] == 47.625
    assert s.power_mw == {"VDD_GPU_SOC": 5139, "VDD_CPU_CV": 3268, "VIN_SYS_5V0": 5500}


def test_thor_no_gpu_utilisation():
    s = parse_line(THOR)
    assert s.gpu_load is None and s.gpu_freq_mhz == [314, 314, 314]
    assert len(s.cpu_load) == 14 and s.cpu_load[11] == 8
    assert s.power_mw["VIN"] == 19780 and s.power_mw["VDD_CPU_SOC_MSS"] == 5887
    assert s.temps_c["soc345"] == 37.406


def test_off_cores_and_garbage_are_not_fatal():
    s = parse_line("RAM 1/2MB CPU [off,5%@100] GR3D_FREQ 7%@99 weird token VDD_X 5/6 ???")
    assert s.time is None and s.cpu_load == [None, 5] and s.gpu_load == 7 and s.gpu_freq_mhz == [99]
    assert s.power_mw == {"VDD_X": 5}
    assert parse_line("").ram_used_mb is None
