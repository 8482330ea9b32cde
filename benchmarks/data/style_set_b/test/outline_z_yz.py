import cadquery as cq

result = (
    cq.Workplane("YZ")
    .polyline([(0, 0), (60, 0), (60, 15), (15, 15), (15, 60), (75, 60), (75, 75), (0, 75)])
    .close()
    .extrude(12)
)
