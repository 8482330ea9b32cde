import cadquery as cq


class Bracket:
    def __init__(self, width, height, thickness):
        self.width = width
        self.height = height
        self.thickness = thickness

    def build(self):
        plate = cq.Workplane("XY").box(self.width, self.thickness, self.height)
        foot = cq.Workplane("XY").box(self.width, self.height, self.thickness).translate(
            (0, self.height / 2, -self.height / 2))
        return plate.union(foot)


show_object(Bracket(30, 20, 3).build())
