import cadquery as cq

result = cq.Workplane("YZ").box(150, 80, 10).faces(">X").workplane().pushPoints([(-40, 0), (40, 0)]).hole(12)
