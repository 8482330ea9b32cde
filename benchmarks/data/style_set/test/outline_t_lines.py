import cadquery as cq

result = (
    cq.Workplane("XY")
    .moveTo(-30, 0)
    .hLine(60)
    .vLine(10)
    .hLine(-22)
    .vLine(50)
    .hLine(-16)
    .vLine(-50)
    .hLine(-22)
    .close()
    .extrude(12)
)
