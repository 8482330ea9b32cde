import cadquery as cq

result = (
    cq.Workplane("XY")
    .moveTo(0, 0)
    .lineTo(100, 0)
    .threePointArc((125, 30), (100, 60))
    .lineTo(0, 60)
    .close()
    .extrude(20)
)
