from twisted.application.service import ServiceMaker

tsagg = ServiceMaker(
    "tsagg", "tsagg.tap",
    "Record a spt3g G3 frame stream into rotating .g3 files.", "tsagg")
