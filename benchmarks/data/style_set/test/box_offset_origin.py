import cadquery as cq

result = (
    cq.Workplane("XY", origin=(10, -5, 3))
    .center(7, 2)
    .box(12.5, 30, 4, centered=(True, False, False))
)
